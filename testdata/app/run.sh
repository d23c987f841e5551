#!/bin/sh
echo running $TIER
