"""Tests of the CNI runner and plugins."""
