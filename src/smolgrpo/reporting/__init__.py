"""Reports, plots, the HTML page, comparisons, model cards and pushing to the hub."""
