"""Built-in readers, one module per source; registered as ``syncx.readers`` entry points."""
