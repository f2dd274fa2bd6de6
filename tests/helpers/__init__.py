"""What the tests share besides fixtures: the CLI runners (cli.py) and the tiny-data writers (data.py)."""
