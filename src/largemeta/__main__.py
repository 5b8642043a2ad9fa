from largemeta.cli import run

run()
