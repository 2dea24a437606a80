"""Job-type plugins: the job types they declare (jobtypes), the store of built-in and uploaded
plugins (store), and the hooks of a plugin's plugin.py (hooks).
"""
