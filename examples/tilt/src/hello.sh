#!/bin/sh
# The demo app: prints what the layer brought and what the prod base already had.
echo "hello from $(cat /app/VERSION) — pushed by layerup"
echo "the base still says: $(cat /etc/prod-release)"
