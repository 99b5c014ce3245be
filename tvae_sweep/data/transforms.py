"""Batched image transforms: rotation, scale, 3-D tilt and hue, for many images at once.

Geometry uses the normalised coordinates of `F.affine_grid` with `align_corners=False`: x runs
left to right and y top to bottom over [-1, 1], pixel centres at (2i + 1) / W - 1. A warp is
given as the map from output coordinates to input coordinates (where each output pixel samples
the input), and `F.grid_sample` resamples bilinearly with zeros outside the image.

Angles are in degrees. A positive rotation turns the picture counter-clockwise as displayed
(the same direction as `torch.rot90` with k=1 on the last two dimensions).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F


def affine_matrix(angle_deg: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """(N,) angles and scales -> (N, 2, 3) `affine_grid` matrices for rotation and scaling.

    The picture is scaled by `scale` and turned counter-clockwise by `angle` about the image
    centre. With y pointing down, that forward map is s * [[c, s_], [-s_, c]], so each output
    pixel samples the input at its inverse:

        input = (1 / scale) * [[cos a, -sin a], [sin a, cos a]] @ output
    """
    a = torch.deg2rad(angle_deg)
    cos, sin = torch.cos(a) / scale, torch.sin(a) / scale
    zero = torch.zeros_like(cos)
    rows = [torch.stack([cos, -sin, zero], -1), torch.stack([sin, cos, zero], -1)]
    return torch.stack(rows, -2)  # (N, 2, 3)


def tilt_matrix(tilt_deg: torch.Tensor, axis_deg: torch.Tensor, distance: float = 3.0) -> torch.Tensor:
    """(N,) tilts -> (N, 3, 3) homographies from output coordinates to coordinates on the tilted plane.

    The picture lies on the plane z = 0 (coordinates in [-1, 1]) and is seen by a pinhole camera
    at height `distance` on the z axis, with the focal length chosen so that the untilted plane
    maps onto the image unchanged: a point P projects to distance * (P_x, P_y) / (distance - P_z).
    The plane is turned by `tilt` about the in-plane axis (cos axis, sin axis, 0) (Rodrigues
    rotation R). Plane coordinates (x, y) go to the image by the homography

        H = [[d R11, d R12, 0], [d R21, d R22, 0], [-R31, -R32, d]]

    and each output pixel samples the plane at H^-1 of its position. tilt = 0 gives the identity
    (up to the homogeneous scale).
    """
    t = torch.deg2rad(tilt_deg)
    phi = torch.deg2rad(axis_deg)
    kx, ky = torch.cos(phi), torch.sin(phi)
    c, s = torch.cos(t), torch.sin(t)
    one_c = 1 - c
    # First two columns of the rotation by t about k = (kx, ky, 0).
    r11, r21, r31 = c + one_c * kx * kx, one_c * kx * ky, -s * ky
    r12, r22, r32 = one_c * kx * ky, c + one_c * ky * ky, s * kx
    d = torch.full_like(c, distance)
    zero = torch.zeros_like(c)
    h = torch.stack([
        torch.stack([d * r11, d * r12, zero], -1),
        torch.stack([d * r21, d * r22, zero], -1),
        torch.stack([-r31, -r32, d], -1),
    ], -2)  # (N, 3, 3) plane -> image
    return torch.linalg.inv(h)  # image -> plane


def homogeneous(theta: torch.Tensor) -> torch.Tensor:
    """(N, 2, 3) affine matrices -> (N, 3, 3) with last row (0, 0, 1)."""
    last = theta.new_tensor([0.0, 0.0, 1.0]).expand(theta.shape[0], 1, 3)
    return torch.cat([theta, last], dim=1)


def pixel_grid(height: int, width: int, device: torch.device | str, dtype=torch.float32) -> torch.Tensor:
    """Homogeneous normalised coordinates of the pixel centres: (H * W, 3) rows (x, y, 1)."""
    xs = (2 * torch.arange(width, device=device, dtype=dtype) + 1) / width - 1
    ys = (2 * torch.arange(height, device=device, dtype=dtype) + 1) / height - 1
    gy, gx = torch.meshgrid(ys, xs, indexing="ij")
    return torch.stack([gx, gy, torch.ones_like(gx)], -1).reshape(-1, 3)


def affine_grid(theta: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """(N, 2, 3) matrices -> (N, H, W, 2) sampling grid, the same as `F.affine_grid(align_corners=False)`.

    One matrix product of all the matrices with the shared pixel grid; `F.affine_grid` runs a
    batched product per image and took about half of the generation time on a 2-core CPU.
    """
    base = pixel_grid(height, width, theta.device, theta.dtype)  # (H*W, 3)
    return torch.einsum("nij,pj->npi", theta, base).reshape(theta.shape[0], height, width, 2)


def affine_warp(images: torch.Tensor, theta: torch.Tensor) -> torch.Tensor:
    """Warp (N, C, H, W) images by (N, 2, 3) output-to-input affine matrices."""
    grid = affine_grid(theta, images.shape[2], images.shape[3])  # (N, H, W, 2)
    return F.grid_sample(images, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


def homography_warp(images: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
    """Warp (N, C, H, W) images by (N, 3, 3) output-to-input homographies (projective maps)."""
    n, _, h, w = images.shape
    base = pixel_grid(h, w, images.device, images.dtype)  # (H*W, 3)
    points = torch.einsum("nij,pj->npi", m, base)  # (N, H*W, 3)
    grid = (points[..., :2] / points[..., 2:]).reshape(n, h, w, 2)
    return F.grid_sample(images, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


def rgb_to_hsv(images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(N, 3, H, W) RGB in [0, 1] -> hue in degrees [0, 360), saturation and value, each (N, H, W)."""
    r, g, b = images.unbind(1)
    value, brightest = images.max(dim=1)
    chroma = value - images.min(dim=1).values
    safe = torch.where(chroma > 0, chroma, torch.ones_like(chroma))
    sector = torch.where(brightest == 0, ((g - b) / safe) % 6,
                         torch.where(brightest == 1, (b - r) / safe + 2, (r - g) / safe + 4))
    hue = torch.where(chroma > 0, 60.0 * sector, torch.zeros_like(sector))
    saturation = torch.where(value > 0, chroma / torch.where(value > 0, value, torch.ones_like(value)),
                             torch.zeros_like(value))
    return hue, saturation, value


def hsv_to_rgb(hue: torch.Tensor, saturation: torch.Tensor, value: torch.Tensor) -> torch.Tensor:
    """Hue in degrees, saturation and value, each (N, H, W) -> (N, 3, H, W) RGB.

    Channel n of (R, G, B) = (5, 3, 1) is v - v s clamp(min(k, 4 - k), 0, 1) with k = (n + h/60) mod 6.
    """
    n = hue.new_tensor([5.0, 3.0, 1.0]).view(1, 3, 1, 1)
    k = (n + hue[:, None] / 60.0) % 6
    ramp = torch.minimum(k, 4 - k).clamp(0.0, 1.0)
    return value[:, None] * (1 - saturation[:, None] * ramp)


def rotate_hue(images: torch.Tensor, hue_deg: torch.Tensor) -> torch.Tensor:
    """Turn the hue of (N, 3, H, W) RGB images by (N,) degrees in HSV, keeping saturation and value:
    the original's transform (kornia's adjust_hue). A red pixel (a, 0, 0) becomes (a, a, 0) at 60
    degrees and (0, a, 0) at 120; a rotation of RGB about the grey axis would dim it instead."""
    hue, saturation, value = rgb_to_hsv(images)
    return hsv_to_rgb((hue + hue_deg.to(hue.dtype)[:, None, None]) % 360, saturation, value)
