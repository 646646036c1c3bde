"""Synced sources: documents kept where teams keep them (websites, git repositories), brought into
the collections by `teambot sync` through the one ingest path, incrementally and without mass loss."""
