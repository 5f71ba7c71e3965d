"""Built-in writers, one module per sink; registered as ``syncx.writers`` entry points."""
