"""QR reading: decoders behind one small interface, debouncing, classification and the pipeline."""
