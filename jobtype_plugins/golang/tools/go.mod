module racetrackd.local/golang-tools

go 1.19
