/*
 * annotate.c - a PNG copy of an image with its boxes drawn, for a person
 * to look at instead of reading coordinates.  Full resolution, boxes in
 * the stored pixel grid exactly as the findings give them.
 */
#include <stdlib.h>

#include "dq.h"


static void
fill(struct dq_raster *r, long x0, long y0, long x1, long y1)
{
	long x, y;

	x0 = x0 < 0 ? 0 : x0;
	y0 = y0 < 0 ? 0 : y0;
	x1 = x1 > r->w ? r->w : x1;
	y1 = y1 > r->h ? r->h : y1;
	for (y = y0; y < y1; y++)
		for (x = x0; x < x1; x++) {
			unsigned char *p = r->px + ((size_t)y * r->w + x) * 3;

			p[0] = 255;
			p[1] = 32;
			p[2] = 32;
		}
}

int
dq_annotate_write(const char *path, const unsigned char *data, size_t len,
    json_t *boxes, struct dq_err *err)
{
	struct dq_raster r;
	json_t *b;
	size_t i;
	long thick;	/* of the lines */
	int rc;

	if (boxes != NULL && !json_is_array(boxes)) {
		dq_err_record(err, "bad_boxes", "bounding_boxes is not an array");
		return -1;
	}
	if (dq_decode(data, len, 3, 0, 0, &r, err) == -1)
		return -1;
	/* lines about 1/400 of the image, so they show at any size */
	thick = (r.w > r.h ? r.w : r.h) / 400;
	if (thick < 2)
		thick = 2;
	json_array_foreach(boxes, i, b) {
		json_t *jx = json_object_get(b, "x"), *jy = json_object_get(b, "y");
		json_t *jw = json_object_get(b, "width"), *jh = json_object_get(b, "height");
		long x, y, w, h;

		if (!json_is_integer(jx) || !json_is_integer(jy) ||
		    !json_is_integer(jw) || !json_is_integer(jh))
			continue;
		x = (long)json_integer_value(jx);
		y = (long)json_integer_value(jy);
		w = (long)json_integer_value(jw);
		h = (long)json_integer_value(jh);
		if (w <= 0 || h <= 0)
			continue;
		/* drawn just outside the box, so the region itself stays visible */
		fill(&r, x - thick, y - thick, x + w + thick, y);
		fill(&r, x - thick, y + h, x + w + thick, y + h + thick);
		fill(&r, x - thick, y, x, y + h);
		fill(&r, x + w, y, x + w + thick, y + h);
	}
	rc = dq_png_write(path, &r, err);
	dq_raster_free(&r);
	return rc;
}
