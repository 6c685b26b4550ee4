"""Image reading, preprocessing, labelled-set readers, shared data loaders and grouped splits."""
