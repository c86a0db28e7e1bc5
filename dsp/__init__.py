"""Signal processing: pedalboard audio I/O, resampling, damage detection, classical repair."""
