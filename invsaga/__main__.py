from invsaga.cli import main

main()
