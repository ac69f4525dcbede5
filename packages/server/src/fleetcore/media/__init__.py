"""Media: images (and later other files) that devices attach to their events, kept in a media
store (the filesystem by default, an S3-compatible bucket by configuration), served only to
users of the device's organization."""
