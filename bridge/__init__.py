"""The outside world: command line, OSC daemon, job queue."""
