"""Everything that trains: the model registry, Word2Vec, graph, walks, DeepWalk, ALS, user
vectors."""
