from racetrackd.commands import main

main()
