from dreamrelation.cli.app import main

main()
