from fleetcore.cli import main

main()
