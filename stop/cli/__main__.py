from stop.cli import main

main()
