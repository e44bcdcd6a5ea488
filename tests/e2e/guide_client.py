# The deployment guide's "Example Client Code (Python)", unchanged except the model id
# ("sanders" -> "identity"). tests/e2e/guide_client_test.cc generates the stubs from
# our proto and points the address at the test's server.
import grpc
import compositing_pb2
import compositing_pb2_grpc
import numpy as np

# Connect to server
channel = grpc.insecure_channel(
    'localhost:50052',
    options=[
        ('grpc.max_send_message_length', 100 * 1024 * 1024),
        ('grpc.max_receive_message_length', 100 * 1024 * 1024),
    ]
)
stub = compositing_pb2_grpc.CompositingServiceStub(channel)

# Prepare request
visual_frames = np.random.randn(24, 6, 320, 320).astype(np.float32)
audio_features = np.random.randn(32, 16, 16).astype(np.float32)

request = compositing_pb2.CompositeBatchRequest(
    model_id="identity",
    visual_frames=visual_frames.tobytes(),
    audio_features=audio_features.tobytes(),
    batch_size=24,
    start_frame_idx=0
)

# Call API
response = stub.InferBatchComposite(request)

if not response.success:
    print(f"Error: {response.error}")
else:
    print(f"Received {len(response.composited_frames)} frames")
    print(f"Inference: {response.inference_time_ms:.2f}ms")
    print(f"Compositing: {response.composite_time_ms:.2f}ms")
    
    # Save frames
    for i, frame_data in enumerate(response.composited_frames):
        with open(f"output_{i}.jpg", "wb") as f:
            f.write(frame_data)
