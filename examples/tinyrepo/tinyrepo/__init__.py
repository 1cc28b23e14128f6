"""tinyrepo: read orders from a CSV file and report revenue per product."""
