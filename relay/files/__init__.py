"""Files: presigned uploads to S3, checked, thumbnailed, compressed and described."""
