"""Work over many items: input sources (files, folders, globs, URIs), the in-process batch runner with its manifest
and resume, jobs (a graph or the automatic mask generator over one item), the Ray engine, and video runs.
"""
