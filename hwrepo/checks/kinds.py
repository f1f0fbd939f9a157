"""The modules that define check kinds. Importing this module registers them all."""
