"""Reading: a feature view's source rows for one interval, as a stream of Arrow record batches."""
