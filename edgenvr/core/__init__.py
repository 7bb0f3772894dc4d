"""The bottom layer: time, ids, records and the bus that carries them, process set-up. Imports nothing of edgenvr's."""
