module racetrackd.local/warmup-job

go 1.19
