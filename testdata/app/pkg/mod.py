print('hello from layerup')
