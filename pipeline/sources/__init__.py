"""Synced sources: documents kept where teams keep them (websites, git repositories, Confluence,
Google Drive, Confluence and Notion exports), brought into the collections by `teambot sync` through
the one ingest path, incrementally and without mass loss."""
