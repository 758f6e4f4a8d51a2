"""Event and snapshot store backends. Each imports its driver lazily, in its own module."""
