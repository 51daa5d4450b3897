//! d2nn-worker: the worker actor and the collectives it all-reduces gradients with.
