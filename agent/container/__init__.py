"""Containers and their processes: setup in forked children, lifecycle and stdio in the agent."""
