from cli.main import main

main(prog_name="rtd")  # `python -m cli` is rtd too: same usage lines, same _RTD_COMPLETE variable
