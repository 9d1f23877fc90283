from rtclassify.cli import main

main()
