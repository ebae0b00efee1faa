"""The ``opticache.v1`` gRPC stubs (``opticache_pb2``, ``opticache_pb2_grpc``),
generated from ``proto/opticache/v1/opticache.proto`` when the package is
built (see ``setup.py``); they are not in the source tree."""
