"""``marketmood report``: the analysts' dashboard rendered to PNG + HTML from the same SQL, without Grafana."""
