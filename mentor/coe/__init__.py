"""Collaborative and Semantic Experts (CoE): label data, train FFN experts, assemble a routed MoE, train routing."""
