"""What is kept and for how long: the sweep, holds, the retention report."""
