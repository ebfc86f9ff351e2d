"""The guest's network identity: addresses, routes and DNS over rtnetlink (no fork on the restore path)."""
