"""A runnable demo of oarepo-s3 on an embedded S3 server (moto) and SQLite."""
