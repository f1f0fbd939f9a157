"""hwrepo: an event-driven repository for open hardware."""

__version__ = "0.1.0"
