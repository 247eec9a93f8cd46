//! Loading and attaching the classifier, draining the ring buffer.
