"""The wire: DocArray schemas, request parameters, document validation and conversions."""
