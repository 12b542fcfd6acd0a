"""Device helpers: one package per protocol behind one small interface."""
