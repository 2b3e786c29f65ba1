"""Support code for the tests and benchmarks (not shipped): generated runs, a real browser.

    from support.synthetic import SyntheticRun      # tests: tests/ is on sys.path
    from support.browser import chromium, serve      # bench/: adds the repo's tests/ to sys.path
"""
