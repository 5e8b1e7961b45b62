from mpsdproxy.cli import main

main()
