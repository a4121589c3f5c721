from codyd.cli import main

main()
