"""Console pages of the EPCIS repository: capture by upload, event search, a product's trace, recall."""
