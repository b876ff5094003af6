"""cluster/demo"""
