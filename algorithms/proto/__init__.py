"""The `aialgs.data` message classes, built by the protobuf runtime from record.proto's descriptor.

A private descriptor pool keeps these classes from clashing with the SageMaker SDK's own
`record_pb2` when both are imported into one process.
"""

from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

from .record_descriptor import SERIALIZED

_POOL = descriptor_pool.DescriptorPool()
_FILE = _POOL.Add(descriptor_pb2.FileDescriptorProto.FromString(SERIALIZED))


def _message_class(name: str):
    descriptor = _POOL.FindMessageTypeByName(f"aialgs.data.{name}")
    if hasattr(message_factory, "GetMessageClass"):
        return message_factory.GetMessageClass(descriptor)
    return message_factory.MessageFactory(_POOL).GetPrototype(descriptor)  # protobuf < 4.22


Float32Tensor = _message_class("Float32Tensor")
Float64Tensor = _message_class("Float64Tensor")
Int32Tensor = _message_class("Int32Tensor")
Bytes = _message_class("Bytes")
Value = _message_class("Value")
Record = _message_class("Record")

__all__ = ["Bytes", "Float32Tensor", "Float64Tensor", "Int32Tensor", "Record", "Value"]
