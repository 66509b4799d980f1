"""propositions: the network's catalogue, who offers what, activities and usage."""
