from dreamrelation.cli import main

main()
