"""Text, JSON and SVG views of what the machine and the kernel do."""
